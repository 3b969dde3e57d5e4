//! Validated names: node names, DNS names and subject alternative names.
//!
//! Parse, don't validate: once a value has one of these types it is known to be well formed, so
//! policy and signing never see a raw string from a flag, a file or a CSR.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a name was rejected before any policy looked at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid node name {name:?}: use 1-63 characters from a-z, A-Z, 0-9, '.', '_' and '-', starting with a letter or digit")]
    NodeName { name: String },
    #[error("invalid DNS name {name:?}: {reason}")]
    DnsName { name: String, reason: &'static str },
    #[error("invalid subject alternative name {text:?}: write DNS:name or IP:address")]
    San { text: String },
}

/// The name of an etcd member (`--name` in etcd), also the key of a registered node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(String);

impl NodeName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NodeName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = (1..=63).contains(&s.len())
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(NameError::NodeName {
                name: s.to_string(),
            })
        }
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A host name as it may appear in a DNS SAN: lower case, no wildcard, RFC 1123 labels.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsName(String);

impl DnsName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DnsName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| NameError::DnsName {
            name: s.to_string(),
            reason,
        };
        let name = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
        if name.is_empty() || name.len() > 253 {
            return Err(err("must be 1-253 characters long"));
        }
        if name.contains('*') {
            return Err(err("wildcard names are never issued"));
        }
        if name.parse::<IpAddr>().is_ok() {
            return Err(err("this is an IP address; pass it as an IP"));
        }
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(err("every label must be 1-63 characters long"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(err("labels may hold only letters, digits and '-'"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(err("labels may not start or end with '-'"));
            }
        }
        Ok(Self(name))
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One subject alternative name of a certificate we issue.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum San {
    Dns(DnsName),
    Ip(IpAddr),
}

impl San {
    /// Reads `DNS:name`, `IP:addr`, or a bare value (an address if it parses as one).
    pub fn parse_loose(text: &str) -> Result<Self, NameError> {
        if let Some(rest) = text.strip_prefix("DNS:") {
            return rest.parse().map(San::Dns);
        }
        if let Some(rest) = text.strip_prefix("IP:") {
            return rest.parse().map(San::Ip).map_err(|_| NameError::San {
                text: text.to_string(),
            });
        }
        match text.parse::<IpAddr>() {
            Ok(ip) => Ok(San::Ip(ip)),
            Err(_) => text.parse().map(San::Dns),
        }
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(name) => write!(f, "DNS:{name}"),
            San::Ip(ip) => write!(f, "IP:{ip}"),
        }
    }
}

impl FromStr for San {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        San::parse_loose(s)
    }
}

impl Serialize for San {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for San {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        San::parse_loose(&text).map_err(serde::de::Error::custom)
    }
}

/// Who a node is: its name and the addresses and DNS names its certificates may carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub name: NodeName,
    pub ips: Vec<IpAddr>,
    pub dns_names: Vec<DnsName>,
}

impl NodeIdentity {
    /// An identity with duplicates removed and a stable order.
    pub fn new(name: NodeName, mut ips: Vec<IpAddr>, mut dns_names: Vec<DnsName>) -> Self {
        ips.sort();
        ips.dedup();
        dns_names.sort();
        dns_names.dedup();
        Self {
            name,
            ips,
            dns_names,
        }
    }

    /// An identity carrying exactly these names.
    pub fn from_sans(name: NodeName, sans: &[San]) -> Self {
        let mut ips = Vec::new();
        let mut dns_names = Vec::new();
        for san in sans {
            match san {
                San::Ip(ip) => ips.push(*ip),
                San::Dns(d) => dns_names.push(d.clone()),
            }
        }
        Self::new(name, ips, dns_names)
    }
}

macro_rules! serde_via_str {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_via_str!(NodeName);
serde_via_str!(DnsName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        assert!("etcd-1".parse::<NodeName>().is_ok());
        assert!("n1.example".parse::<NodeName>().is_ok());
        assert!("".parse::<NodeName>().is_err());
        assert!("-n1".parse::<NodeName>().is_err());
        assert!("n 1".parse::<NodeName>().is_err());
        assert!("n1/../x".parse::<NodeName>().is_err());
    }

    #[test]
    fn dns_names_are_normalised_and_wildcards_refused() {
        let name: DnsName = "Etcd-1.Example.COM.".parse().unwrap();
        assert_eq!(name.as_str(), "etcd-1.example.com");
        assert!("*.example.com".parse::<DnsName>().is_err());
        assert!("a..b".parse::<DnsName>().is_err());
        assert!("-a.b".parse::<DnsName>().is_err());
        assert!("10.0.0.1".parse::<DnsName>().is_err());
        assert!("under_score.example".parse::<DnsName>().is_err());
    }

    #[test]
    fn sans_parse_with_and_without_prefix() {
        assert_eq!(
            San::parse_loose("IP:10.0.0.1").unwrap().to_string(),
            "IP:10.0.0.1"
        );
        assert_eq!(San::parse_loose("::1").unwrap().to_string(), "IP:::1");
        assert_eq!(
            San::parse_loose("localhost").unwrap().to_string(),
            "DNS:localhost"
        );
        assert!(San::parse_loose("IP:not-an-ip").is_err());
    }
}
