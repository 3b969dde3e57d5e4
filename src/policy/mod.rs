//! Policy: what each certificate profile may contain, and the decision for one request.
//!
//! A policy file (TOML, see `policies/etcd.toml`) becomes a validated [`Policy`]; a [`Request`]
//! plus the current time becomes either a [`Grant`] or a typed refusal naming the name and the
//! rule. This module is pure: no I/O (it parses the text it is handed; the caller reads the file),
//! no clock (time is passed in), no signing. The authority signs only what a `Grant` says. The
//! file format lives in `file`; the API's codes for its refusals live in `api::error`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use time::OffsetDateTime;
use toml::Spanned;

use crate::duration::HumanDuration;
use crate::names::{DnsName, NodeIdentity, NodeName, San};
use crate::pki::KeyType;

/// The policy that ships with etcd-ca and that `init` installs unless told otherwise.
pub const DEFAULT_POLICY: &str = include_str!("../../policies/etcd.toml");

/// A policy file problem or a refused request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy file {}, line {line}, key `{key}`: {message}", path.display())]
    File {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
    #[error("unknown profile {profile:?} (known profiles: {})", known.join(", "))]
    UnknownProfile { profile: String, known: Vec<String> },
    #[error("IP {ip} is outside the policy's allowed ranges ({})", ranges.join(", "))]
    IpNotAllowed { ip: IpAddr, ranges: Vec<String> },
    #[error("DNS name {name} is not allowed by the policy's dns_names ({})", patterns.join(", "))]
    DnsNameNotAllowed { name: String, patterns: Vec<String> },
    #[error("{san} is not part of node {node}'s identity for profile {profile} (allowed: {})", allowed.join(", "))]
    SanOutsideIdentity {
        san: String,
        node: String,
        profile: String,
        allowed: Vec<String>,
    },
    #[error("profile {profile} needs a common name (the etcd user name): pass --cn USER")]
    CommonNameRequired { profile: String },
    #[error("profile {profile} sets the common name itself ({fixed}); a requested CN {requested:?} is not accepted")]
    CommonNameFixed {
        profile: String,
        fixed: String,
        requested: String,
    },
    #[error("common name {cn:?} holds every permission in etcd; profile {profile} issues it only when explicitly asked (--allow-root)")]
    PrivilegedCommonName { cn: String, profile: String },
    #[error("common name {cn:?} is reserved (rule {rule:?} of profile {profile}): it names etcd members, not users")]
    ReservedCommonName {
        cn: String,
        profile: String,
        rule: String,
    },
    #[error("invalid common name {cn:?}: {reason}")]
    InvalidCommonName { cn: String, reason: &'static str },
    #[error("key type {key_type} is not allowed (allowed: {})", allowed.join(", "))]
    KeyTypeNotAllowed {
        key_type: KeyType,
        allowed: Vec<String>,
    },
    #[error("the issuing CA expired at {}; nothing can be issued under it", crate::duration::rfc3339(*not_after))]
    IssuerExpired { not_after: OffsetDateTime },
}

/// Extended key usages a profile may grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum ExtendedKeyUsage {
    #[serde(rename = "serverAuth")]
    ServerAuth,
    #[serde(rename = "clientAuth")]
    ClientAuth,
}

impl fmt::Display for ExtendedKeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExtendedKeyUsage::ServerAuth => "serverAuth",
            ExtendedKeyUsage::ClientAuth => "clientAuth",
        })
    }
}

/// Key usages a leaf profile may grant (never keyCertSign or cRLSign).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum KeyUsage {
    #[serde(rename = "digitalSignature")]
    DigitalSignature,
    #[serde(rename = "keyEncipherment")]
    KeyEncipherment,
    #[serde(rename = "keyAgreement")]
    KeyAgreement,
}

/// How a profile's common name is chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommonNameRule {
    /// Fixed by policy; `{node}` is replaced by the node name.
    Template(String),
    /// Taken from the request (a client's etcd user name).
    FromRequest,
}

/// One validated profile.
#[derive(Clone, Debug)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub extended_key_usages: Vec<ExtendedKeyUsage>,
    pub key_usages: Vec<KeyUsage>,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub common_name: CommonNameRule,
    pub privileged_common_names: Vec<String>,
    pub reserved_common_names: Vec<String>,
    pub include_node_ips: bool,
    pub include_node_dns_names: bool,
    pub extra_sans: Vec<San>,
}

/// How long what is no longer needed is kept before the server removes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// A certificate is removed this long after it expired (a revoked one too: CRLs list a
    /// certificate only until it expires). A node's current certificate is kept regardless.
    pub expired_certificates: Duration,
    /// A bootstrap token is removed this long after it was used or expired.
    pub tokens: Duration,
    /// Audit events older than this are removed.
    pub audit_events: Duration,
}

/// A validated policy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub backdate: Duration,
    pub crl_lifetime: Duration,
    /// Lifetime of the CA server's own TLS certificate (renewed at 2/3 of it).
    pub server_lifetime: Duration,
    pub retention: Retention,
    pub allowed_key_types: Vec<KeyType>,
    pub ip_ranges: Vec<IpNet>,
    pub dns_names: Vec<String>,
    profiles: BTreeMap<String, Profile>,
}

/// What is asked for. Names come from flags (offline issue) or from a CSR and a token (enrollment).
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub profile: &'a str,
    /// The node's registered identity: the most its certificates may carry.
    pub node: &'a NodeIdentity,
    /// An explicit CN (a client's etcd user). A CSR's own CN is not passed here.
    pub common_name: Option<&'a str>,
    /// Names a CSR asked for: each must be within what the profile gives the node.
    pub requested_sans: &'a [San],
    pub lifetime: Option<Duration>,
    pub key_type: KeyType,
    /// The admin explicitly asked for a privileged CN such as `root`.
    pub allow_privileged_common_name: bool,
}

/// What a renewal keeps: the identity recorded for the certificate being renewed.
#[derive(Clone, Debug)]
pub struct Renewal<'a> {
    pub profile: &'a str,
    pub node: &'a NodeName,
    pub common_name: &'a str,
    pub sans: &'a [San],
    pub key_type: KeyType,
}

/// Profile name recorded for the CA server's own TLS certificate.
pub const SERVER_PROFILE: &str = "etcd-ca-server";

/// Profiles whose holder runs etcd (and so restarts to trust a new CA): server and peer.
pub fn is_member_profile(profile: &str) -> bool {
    profile == "server" || profile == "peer"
}

/// Profile whose client certificates may use the admin API.
pub const ADMIN_PROFILE: &str = "admin";

/// What the authority may sign: produced only by the `Policy` evaluation functions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    profile: String,
    node: NodeName,
    common_name: String,
    sans: Vec<San>,
    extended_key_usages: Vec<ExtendedKeyUsage>,
    key_usages: Vec<KeyUsage>,
    key_type: KeyType,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl Grant {
    pub fn profile(&self) -> &str {
        &self.profile
    }
    pub fn node(&self) -> &NodeName {
        &self.node
    }
    pub fn common_name(&self) -> &str {
        &self.common_name
    }
    pub fn sans(&self) -> &[San] {
        &self.sans
    }
    pub fn extended_key_usages(&self) -> &[ExtendedKeyUsage] {
        &self.extended_key_usages
    }
    pub fn key_usages(&self) -> &[KeyUsage] {
        &self.key_usages
    }
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }
}

impl Policy {
    /// The longest lifetime any profile allows: how long a certificate may still be valid
    /// after it was issued.
    pub fn longest_lifetime(&self) -> Duration {
        self.profiles
            .values()
            .map(|p| p.max_lifetime)
            .max()
            .unwrap_or_default()
    }

    /// Parses and validates a policy; `path` is only used to name the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, PolicyError> {
        let raw: PolicyFile = {
            let de = toml::Deserializer::parse(text).map_err(|e| file_error(path, text, "", &e))?;
            serde_path_to_error::deserialize(de).map_err(|e| {
                // Spanned<T> shows up in the path as a private marker segment; drop it.
                let key = e
                    .path()
                    .to_string()
                    .split('.')
                    .filter(|segment| !segment.starts_with("$__serde_spanned"))
                    .collect::<Vec<_>>()
                    .join(".");
                file_error(path, text, &key, e.inner())
            })?
        };
        raw.validate(path, text)
    }

    pub fn profile(&self, name: &str) -> Result<&Profile, PolicyError> {
        self.profiles
            .get(name)
            .ok_or_else(|| PolicyError::UnknownProfile {
                profile: name.to_string(),
                known: self.profile_names(),
            })
    }

    pub fn profile_names(&self) -> Vec<String> {
        self.profiles.keys().cloned().collect()
    }

    /// Checks that a node identity only holds names the policy allows.
    pub fn check_identity(&self, node: &NodeIdentity) -> Result<(), PolicyError> {
        for ip in &node.ips {
            self.check_ip(*ip)?;
        }
        for name in &node.dns_names {
            self.check_dns_name(name)?;
        }
        Ok(())
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), PolicyError> {
        if self.ip_ranges.iter().any(|net| net.contains(&ip)) {
            Ok(())
        } else {
            Err(PolicyError::IpNotAllowed {
                ip,
                ranges: self.ip_ranges.iter().map(|n| n.to_string()).collect(),
            })
        }
    }

    fn check_dns_name(&self, name: &DnsName) -> Result<(), PolicyError> {
        let name = name.as_str();
        let allowed = self.dns_names.iter().any(|pattern| {
            if pattern == "*" {
                true
            } else if let Some(suffix) = pattern.strip_prefix("*.") {
                name.len() > suffix.len() + 1
                    && name.ends_with(suffix)
                    && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
            } else {
                pattern.eq_ignore_ascii_case(name)
            }
        });
        if allowed {
            Ok(())
        } else {
            Err(PolicyError::DnsNameNotAllowed {
                name: name.to_string(),
                patterns: self.dns_names.clone(),
            })
        }
    }

    /// Decides one request. `issuer_not_after` caps the lifetime: no leaf outlives its CA.
    pub fn evaluate(
        &self,
        request: &Request<'_>,
        now: OffsetDateTime,
        issuer_not_after: OffsetDateTime,
    ) -> Result<Grant, PolicyError> {
        let profile = self.preflight(request.profile, request.key_type, now, issuer_not_after)?;
        self.check_identity(request.node)?;

        let common_name = profile.common_name_for(request)?;
        let sans = profile.sans_for(request.node);
        if let Some(extra) = request.requested_sans.iter().find(|s| !sans.contains(s)) {
            return Err(PolicyError::SanOutsideIdentity {
                san: extra.to_string(),
                node: request.node.name.to_string(),
                profile: profile.name.clone(),
                allowed: sans.iter().map(|s| s.to_string()).collect(),
            });
        }
        Ok(self.grant(
            profile,
            &request.node.name,
            common_name,
            sans,
            request.key_type,
            request.lifetime,
            now,
            issuer_not_after,
        ))
    }

    /// Decides a renewal: the certificate keeps its recorded identity (profile, node, CN, SANs);
    /// key usages and lifetime come from the profile as it is now, and every name must still be
    /// allowed.
    pub fn evaluate_renewal(
        &self,
        renewal: &Renewal<'_>,
        now: OffsetDateTime,
        issuer_not_after: OffsetDateTime,
    ) -> Result<Grant, PolicyError> {
        let profile = self.preflight(renewal.profile, renewal.key_type, now, issuer_not_after)?;
        for san in renewal.sans {
            if profile.extra_sans.contains(san) {
                continue;
            }
            match san {
                San::Ip(ip) => self.check_ip(*ip)?,
                San::Dns(name) => self.check_dns_name(name)?,
            }
        }
        let common_name = match &profile.common_name {
            CommonNameRule::Template(template) => template.replace("{node}", renewal.node.as_str()),
            CommonNameRule::FromRequest => {
                // A privileged CN was explicitly allowed when first issued; a reserved one never is.
                profile.check_not_reserved(renewal.common_name)?;
                renewal.common_name.to_string()
            }
        };
        Ok(self.grant(
            profile,
            renewal.node,
            common_name,
            renewal.sans.to_vec(),
            renewal.key_type,
            None,
            now,
            issuer_not_after,
        ))
    }

    /// The CA server's own TLS certificate: serverAuth only, for the names it is reached by.
    pub fn server_grant(
        &self,
        node: NodeName,
        sans: Vec<San>,
        key_type: KeyType,
        now: OffsetDateTime,
        issuer_not_after: OffsetDateTime,
    ) -> Grant {
        let now = now.replace_nanosecond(0).unwrap_or(now);
        Grant {
            profile: SERVER_PROFILE.to_string(),
            common_name: format!("etcd-ca server {node}"),
            node,
            sans,
            extended_key_usages: vec![ExtendedKeyUsage::ServerAuth],
            key_usages: vec![KeyUsage::DigitalSignature],
            key_type,
            not_before: now - time_duration(self.backdate),
            not_after: (now + time_duration(self.server_lifetime)).min(issuer_not_after),
        }
    }

    fn preflight(
        &self,
        profile: &str,
        key_type: KeyType,
        now: OffsetDateTime,
        issuer_not_after: OffsetDateTime,
    ) -> Result<&Profile, PolicyError> {
        let profile = self.profile(profile)?;
        if !self.allowed_key_types.contains(&key_type) {
            return Err(PolicyError::KeyTypeNotAllowed {
                key_type,
                allowed: self
                    .allowed_key_types
                    .iter()
                    .map(|k| k.to_string())
                    .collect(),
            });
        }
        if issuer_not_after <= now {
            return Err(PolicyError::IssuerExpired {
                not_after: issuer_not_after,
            });
        }
        Ok(profile)
    }

    #[allow(clippy::too_many_arguments)]
    fn grant(
        &self,
        profile: &Profile,
        node: &NodeName,
        common_name: String,
        sans: Vec<San>,
        key_type: KeyType,
        lifetime: Option<Duration>,
        now: OffsetDateTime,
        issuer_not_after: OffsetDateTime,
    ) -> Grant {
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let lifetime = lifetime
            .unwrap_or(profile.default_lifetime)
            .min(profile.max_lifetime);
        let mut key_usages = profile.key_usages.clone();
        // RSA key exchange in TLS 1.2 encrypts to the certificate's key; other key types never do.
        if key_type == KeyType::Rsa && !key_usages.contains(&KeyUsage::KeyEncipherment) {
            key_usages.push(KeyUsage::KeyEncipherment);
        }
        Grant {
            profile: profile.name.clone(),
            node: node.clone(),
            common_name,
            sans,
            extended_key_usages: profile.extended_key_usages.clone(),
            key_usages,
            key_type,
            not_before: now - time_duration(self.backdate),
            not_after: (now + time_duration(lifetime)).min(issuer_not_after),
        }
    }
}

impl Profile {
    fn common_name_for(&self, request: &Request<'_>) -> Result<String, PolicyError> {
        match &self.common_name {
            CommonNameRule::Template(template) => {
                let fixed = template.replace("{node}", request.node.name.as_str());
                match request.common_name {
                    Some(requested) if requested != fixed => Err(PolicyError::CommonNameFixed {
                        profile: self.name.clone(),
                        fixed,
                        requested: requested.to_string(),
                    }),
                    _ => Ok(fixed),
                }
            }
            CommonNameRule::FromRequest => {
                let cn = request
                    .common_name
                    .ok_or_else(|| PolicyError::CommonNameRequired {
                        profile: self.name.clone(),
                    })?;
                check_common_name_syntax(cn)?;
                self.check_not_reserved(cn)?;
                let privileged = self
                    .privileged_common_names
                    .iter()
                    .any(|rule| name_matches(rule, cn));
                if privileged && !request.allow_privileged_common_name {
                    return Err(PolicyError::PrivilegedCommonName {
                        cn: cn.to_string(),
                        profile: self.name.clone(),
                    });
                }
                Ok(cn.to_string())
            }
        }
    }

    fn check_not_reserved(&self, cn: &str) -> Result<(), PolicyError> {
        match self
            .reserved_common_names
            .iter()
            .find(|rule| name_matches(rule, cn))
        {
            Some(rule) => Err(PolicyError::ReservedCommonName {
                cn: cn.to_string(),
                profile: self.name.clone(),
                rule: rule.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Exactly the SANs a certificate of this profile carries for this node.
    fn sans_for(&self, node: &NodeIdentity) -> Vec<San> {
        let mut sans = Vec::new();
        if self.include_node_dns_names {
            sans.extend(node.dns_names.iter().cloned().map(San::Dns));
        }
        if self.include_node_ips {
            sans.extend(node.ips.iter().copied().map(San::Ip));
        }
        for extra in &self.extra_sans {
            if !sans.contains(extra) {
                sans.push(extra.clone());
            }
        }
        sans
    }
}

/// `rule` is an exact name or, ending in `*`, a prefix.
fn name_matches(rule: &str, name: &str) -> bool {
    match rule.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => rule == name,
    }
}

fn check_common_name_syntax(cn: &str) -> Result<(), PolicyError> {
    let err = |reason| PolicyError::InvalidCommonName {
        cn: cn.to_string(),
        reason,
    };
    if cn.is_empty() || cn.len() > 64 {
        return Err(err("must be 1-64 characters long"));
    }
    if cn.trim() != cn {
        return Err(err("must not start or end with spaces"));
    }
    if !cn
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-:@ ".contains(&b))
    {
        return Err(err("may hold only letters, digits, spaces and . _ - : @"));
    }
    Ok(())
}

fn time_duration(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

mod file;
#[cfg(test)]
mod tests;

use file::*;
