//! Policy: what each certificate profile may contain, and the decision for one request.
//!
//! A policy file (TOML, see `policies/etcd.toml`) becomes a validated [`Policy`]; a [`Request`]
//! plus the current time becomes either a [`Grant`] or a typed refusal naming the name and the
//! rule. This module is pure: no I/O beyond reading the policy text it is handed, no clock (time
//! is passed in), no signing. The authority signs only what a `Grant` says.

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
pub const DEFAULT_POLICY: &str = include_str!("../policies/etcd.toml");

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

impl PolicyError {
    /// A stable, machine-readable name for the refusal (the API's error `code`).
    pub fn code(&self) -> &'static str {
        match self {
            PolicyError::File { .. } => "policy_file_invalid",
            PolicyError::UnknownProfile { .. } => "unknown_profile",
            PolicyError::IpNotAllowed { .. } | PolicyError::DnsNameNotAllowed { .. } => {
                "san_not_allowed"
            }
            PolicyError::SanOutsideIdentity { .. } => "san_outside_identity",
            PolicyError::CommonNameRequired { .. } => "common_name_required",
            PolicyError::CommonNameFixed { .. } => "common_name_fixed",
            PolicyError::PrivilegedCommonName { .. } => "common_name_privileged",
            PolicyError::ReservedCommonName { .. } => "common_name_reserved",
            PolicyError::InvalidCommonName { .. } => "common_name_invalid",
            PolicyError::KeyTypeNotAllowed { .. } => "key_type_not_allowed",
            PolicyError::IssuerExpired { .. } => "issuer_expired",
        }
    }
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

/// A validated policy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub backdate: Duration,
    pub crl_lifetime: Duration,
    /// Lifetime of the CA server's own TLS certificate (renewed at 2/3 of it).
    pub server_lifetime: Duration,
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

    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::File {
            path: path.to_path_buf(),
            line: 0,
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
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

fn line_of(text: &str, span: Option<Range<usize>>) -> usize {
    span.map_or(0, |s| {
        text[..s.start.min(text.len())].matches('\n').count() + 1
    })
}

fn file_error(path: &Path, text: &str, key: &str, e: &toml::de::Error) -> PolicyError {
    PolicyError::File {
        path: path.to_path_buf(),
        line: line_of(text, e.span()),
        key: if key.is_empty() || key == "." {
            "(top level)".into()
        } else {
            key.to_string()
        },
        message: e.message().trim().to_string(),
    }
}

// ---- the file format ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    defaults: DefaultsFile,
    names: NamesFile,
    profiles: BTreeMap<String, Spanned<ProfileFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultsFile {
    #[serde(default = "default_backdate")]
    backdate: HumanDuration,
    #[serde(default = "default_crl_lifetime")]
    crl_lifetime: HumanDuration,
    #[serde(default = "default_server_lifetime")]
    server_lifetime: HumanDuration,
    #[serde(default = "default_key_types")]
    allowed_key_types: Vec<KeyType>,
}

impl Default for DefaultsFile {
    fn default() -> Self {
        Self {
            backdate: default_backdate(),
            crl_lifetime: default_crl_lifetime(),
            server_lifetime: default_server_lifetime(),
            allowed_key_types: default_key_types(),
        }
    }
}

fn default_backdate() -> HumanDuration {
    HumanDuration::from_secs(300)
}
fn default_crl_lifetime() -> HumanDuration {
    HumanDuration::from_secs(7 * 86400)
}
fn default_server_lifetime() -> HumanDuration {
    HumanDuration::from_secs(365 * 86400)
}
fn default_key_types() -> Vec<KeyType> {
    KeyType::ALL.to_vec()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamesFile {
    ip_ranges: Vec<IpNet>,
    dns_names: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    #[serde(default)]
    description: String,
    extended_key_usages: Vec<ExtendedKeyUsage>,
    key_usages: Vec<KeyUsage>,
    default_lifetime: Spanned<HumanDuration>,
    max_lifetime: Spanned<HumanDuration>,
    common_name: Spanned<String>,
    #[serde(default)]
    privileged_common_names: Vec<String>,
    #[serde(default)]
    reserved_common_names: Vec<String>,
    include_node_ips: bool,
    include_node_dns_names: bool,
    #[serde(default)]
    extra_sans: Vec<San>,
}

impl PolicyFile {
    fn validate(self, path: &Path, text: &str) -> Result<Policy, PolicyError> {
        let invalid = |span: Range<usize>, key: String, message: String| PolicyError::File {
            path: path.to_path_buf(),
            line: line_of(text, Some(span)),
            key,
            message,
        };
        let mut dns_names = Vec::new();
        for pattern in self.names.dns_names {
            let span = pattern.span();
            let value = pattern.into_inner();
            let check = match value.strip_prefix("*.") {
                _ if value == "*" => Ok(()),
                Some(suffix) => suffix.parse::<DnsName>().map(drop),
                None => value.parse::<DnsName>().map(drop),
            };
            check.map_err(|e| invalid(span, "names.dns_names".into(), e.to_string()))?;
            dns_names.push(value);
        }
        if self.profiles.is_empty() {
            return Err(invalid(
                0..0,
                "profiles".into(),
                "no profiles defined".into(),
            ));
        }
        let mut profiles = BTreeMap::new();
        for (name, spanned) in self.profiles {
            let span = spanned.span();
            let p = spanned.into_inner();
            let key = |field: &str| format!("profiles.{name}.{field}");
            if p.extended_key_usages.is_empty() {
                return Err(invalid(
                    span,
                    key("extended_key_usages"),
                    "a profile needs at least one extended key usage".into(),
                ));
            }
            let (default_span, default_lifetime) =
                (p.default_lifetime.span(), p.default_lifetime.into_inner());
            let (max_span, max_lifetime) = (p.max_lifetime.span(), p.max_lifetime.into_inner());
            if default_lifetime.as_std() < Duration::from_secs(1) {
                return Err(invalid(
                    default_span,
                    key("default_lifetime"),
                    "must be at least one second".into(),
                ));
            }
            if max_lifetime < default_lifetime {
                return Err(invalid(
                    max_span,
                    key("max_lifetime"),
                    format!("{max_lifetime} is shorter than default_lifetime {default_lifetime}"),
                ));
            }
            let cn_span = p.common_name.span();
            let cn = p.common_name.into_inner();
            let common_name = if cn == "{request}" {
                CommonNameRule::FromRequest
            } else {
                let probe = cn.replace("{node}", "n");
                if probe.contains('{') || probe.contains('}') {
                    return Err(invalid(
                        cn_span,
                        key("common_name"),
                        format!("{cn:?}: the only placeholders are {{node}} in a fixed name, or exactly \"{{request}}\""),
                    ));
                }
                check_common_name_syntax(&probe)
                    .map_err(|e| invalid(cn_span.clone(), key("common_name"), e.to_string()))?;
                CommonNameRule::Template(cn)
            };
            profiles.insert(
                name.clone(),
                Profile {
                    name: name.clone(),
                    description: p.description,
                    extended_key_usages: p.extended_key_usages,
                    key_usages: p.key_usages,
                    default_lifetime: default_lifetime.as_std(),
                    max_lifetime: max_lifetime.as_std(),
                    common_name,
                    privileged_common_names: p.privileged_common_names,
                    reserved_common_names: p.reserved_common_names,
                    include_node_ips: p.include_node_ips,
                    include_node_dns_names: p.include_node_dns_names,
                    extra_sans: p.extra_sans,
                },
            );
        }
        Ok(Policy {
            backdate: self.defaults.backdate.as_std(),
            crl_lifetime: self.defaults.crl_lifetime.as_std(),
            server_lifetime: self.defaults.server_lifetime.as_std(),
            allowed_key_types: self.defaults.allowed_key_types,
            ip_ranges: self.names.ip_ranges,
            dns_names,
            profiles,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-22 12:00 UTC);
    const CA_NOT_AFTER: OffsetDateTime = datetime!(2036-11-22 12:00 UTC);

    fn policy() -> Policy {
        Policy::parse(DEFAULT_POLICY, Path::new("policies/etcd.toml")).unwrap()
    }

    fn node() -> NodeIdentity {
        NodeIdentity::new(
            "n1".parse().unwrap(),
            vec!["10.0.0.11".parse().unwrap()],
            vec!["n1.etcd.internal".parse().unwrap()],
        )
    }

    fn request<'a>(profile: &'a str, node: &'a NodeIdentity) -> Request<'a> {
        Request {
            profile,
            node,
            common_name: None,
            requested_sans: &[],
            lifetime: None,
            key_type: KeyType::EcdsaP256,
            allow_privileged_common_name: false,
        }
    }

    fn sans(grant: &Grant) -> Vec<String> {
        grant.sans().iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn server_certificates_carry_node_names_and_local_names_with_both_ekus() {
        let node = node();
        let grant = policy()
            .evaluate(&request("server", &node), NOW, CA_NOT_AFTER)
            .unwrap();
        assert_eq!(
            sans(&grant),
            [
                "DNS:n1.etcd.internal",
                "IP:10.0.0.11",
                "DNS:localhost",
                "IP:127.0.0.1",
                "IP:::1"
            ]
        );
        assert_eq!(
            grant.extended_key_usages(),
            [ExtendedKeyUsage::ServerAuth, ExtendedKeyUsage::ClientAuth]
        );
        assert_eq!(grant.common_name(), "etcd-server:n1");
        assert_eq!(grant.key_usages(), [KeyUsage::DigitalSignature]);
    }

    #[test]
    fn peer_certificates_carry_only_the_node_and_a_shared_cn() {
        let node = node();
        let grant = policy()
            .evaluate(&request("peer", &node), NOW, CA_NOT_AFTER)
            .unwrap();
        assert_eq!(sans(&grant), ["DNS:n1.etcd.internal", "IP:10.0.0.11"]);
        assert_eq!(grant.common_name(), "etcd-peer");
        assert_eq!(
            grant.extended_key_usages(),
            [ExtendedKeyUsage::ServerAuth, ExtendedKeyUsage::ClientAuth]
        );
    }

    #[test]
    fn client_certificates_are_client_auth_only_with_the_user_as_cn_and_no_sans() {
        let node = node();
        let mut req = request("client", &node);
        req.common_name = Some("kube-apiserver");
        let grant = policy().evaluate(&req, NOW, CA_NOT_AFTER).unwrap();
        assert_eq!(grant.extended_key_usages(), [ExtendedKeyUsage::ClientAuth]);
        assert_eq!(grant.common_name(), "kube-apiserver");
        assert!(grant.sans().is_empty());
    }

    #[test]
    fn root_is_refused_unless_explicitly_allowed() {
        let node = node();
        let mut req = request("client", &node);
        req.common_name = Some("root");
        let err = policy().evaluate(&req, NOW, CA_NOT_AFTER).unwrap_err();
        assert_eq!(err.code(), "common_name_privileged");
        assert!(err.to_string().contains("--allow-root"), "{err}");
        req.allow_privileged_common_name = true;
        assert_eq!(
            policy()
                .evaluate(&req, NOW, CA_NOT_AFTER)
                .unwrap()
                .common_name(),
            "root"
        );
    }

    #[test]
    fn member_names_are_reserved_for_clients() {
        let node = node();
        for cn in ["etcd-peer", "etcd-server:n2"] {
            let mut req = request("client", &node);
            req.common_name = Some(cn);
            req.allow_privileged_common_name = true;
            let err = policy().evaluate(&req, NOW, CA_NOT_AFTER).unwrap_err();
            assert_eq!(err.code(), "common_name_reserved", "{cn}");
        }
    }

    #[test]
    fn client_without_cn_and_server_with_foreign_cn_are_refused() {
        let node = node();
        let err = policy()
            .evaluate(&request("client", &node), NOW, CA_NOT_AFTER)
            .unwrap_err();
        assert_eq!(err.code(), "common_name_required");
        let mut req = request("server", &node);
        req.common_name = Some("root");
        let err = policy().evaluate(&req, NOW, CA_NOT_AFTER).unwrap_err();
        assert_eq!(err.code(), "common_name_fixed");
    }

    #[test]
    fn addresses_outside_the_allowed_ranges_are_refused_with_the_name() {
        let node = NodeIdentity::new(
            "n1".parse().unwrap(),
            vec!["8.8.8.8".parse().unwrap()],
            vec![],
        );
        let err = policy()
            .evaluate(&request("server", &node), NOW, CA_NOT_AFTER)
            .unwrap_err();
        assert_eq!(err.code(), "san_not_allowed");
        assert!(err.to_string().contains("8.8.8.8"), "{err}");
        assert!(err.to_string().contains("10.0.0.0/8"), "{err}");
    }

    #[test]
    fn dns_patterns_limit_names() {
        let mut policy = policy();
        policy.dns_names = vec!["*.etcd.internal".into(), "exact.example".into()];
        let ok = |name: &str| policy.check_dns_name(&name.parse().unwrap()).is_ok();
        assert!(ok("n1.etcd.internal"));
        assert!(ok("a.b.etcd.internal"));
        assert!(ok("exact.example"));
        assert!(!ok("etcd.internal"));
        assert!(!ok("evil-etcd.internal"));
        assert!(!ok("n1.example"));
    }

    #[test]
    fn csr_names_must_stay_within_the_grant() {
        let node = node();
        let inside = [San::parse_loose("10.0.0.11").unwrap()];
        let mut req = request("peer", &node);
        req.requested_sans = &inside;
        assert!(policy().evaluate(&req, NOW, CA_NOT_AFTER).is_ok());

        let outside = [San::parse_loose("10.0.0.12").unwrap()];
        req.requested_sans = &outside;
        let err = policy().evaluate(&req, NOW, CA_NOT_AFTER).unwrap_err();
        assert_eq!(err.code(), "san_outside_identity");
        assert!(err.to_string().contains("IP:10.0.0.12"), "{err}");

        // localhost belongs to server certificates, not peer certificates.
        let local = [San::parse_loose("localhost").unwrap()];
        req.requested_sans = &local;
        assert!(policy().evaluate(&req, NOW, CA_NOT_AFTER).is_err());
    }

    #[test]
    fn lifetimes_default_are_capped_by_the_maximum_and_by_the_ca() {
        let node = node();
        let p = policy();
        let grant = p
            .evaluate(&request("server", &node), NOW, CA_NOT_AFTER)
            .unwrap();
        assert_eq!(grant.not_after(), NOW + time::Duration::days(90));
        assert_eq!(grant.not_before(), NOW - time::Duration::minutes(5));

        let mut req = request("server", &node);
        req.lifetime = Some(Duration::from_secs(1000 * 86400));
        let grant = p.evaluate(&req, NOW, CA_NOT_AFTER).unwrap();
        assert_eq!(grant.not_after(), NOW + time::Duration::days(365));

        req.lifetime = Some(Duration::from_secs(3600));
        let grant = p.evaluate(&req, NOW, CA_NOT_AFTER).unwrap();
        assert_eq!(grant.not_after(), NOW + time::Duration::hours(1));

        let ca_ends_soon = NOW + time::Duration::days(10);
        let grant = p
            .evaluate(&request("server", &node), NOW, ca_ends_soon)
            .unwrap();
        assert_eq!(grant.not_after(), ca_ends_soon);

        let err = p
            .evaluate(&request("server", &node), ca_ends_soon, ca_ends_soon)
            .unwrap_err();
        assert_eq!(err.code(), "issuer_expired");
    }

    #[test]
    fn rsa_keys_also_get_key_encipherment_and_key_types_follow_policy() {
        let node = node();
        let mut p = policy();
        let mut req = request("server", &node);
        req.key_type = KeyType::Rsa;
        let grant = p.evaluate(&req, NOW, CA_NOT_AFTER).unwrap();
        assert_eq!(
            grant.key_usages(),
            [KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment]
        );
        p.allowed_key_types = vec![KeyType::EcdsaP256];
        let err = p.evaluate(&req, NOW, CA_NOT_AFTER).unwrap_err();
        assert_eq!(err.code(), "key_type_not_allowed");
    }

    #[test]
    fn unknown_profiles_list_the_known_ones() {
        let node = node();
        let err = policy()
            .evaluate(&request("admin-ish", &node), NOW, CA_NOT_AFTER)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown profile \"admin-ish\" (known profiles: admin, client, peer, server)"
        );
    }

    #[test]
    fn renewals_keep_the_recorded_identity_and_take_lifetimes_from_the_profile() {
        let p = policy();
        let node: NodeName = "n1".parse().unwrap();
        let sans = [
            San::parse_loose("10.0.0.11").unwrap(),
            San::parse_loose("localhost").unwrap(),
        ];
        let renewal = Renewal {
            profile: "server",
            node: &node,
            common_name: "whatever-was-recorded",
            sans: &sans,
            key_type: KeyType::EcdsaP256,
        };
        let grant = p.evaluate_renewal(&renewal, NOW, CA_NOT_AFTER).unwrap();
        assert_eq!(grant.sans(), sans);
        assert_eq!(grant.common_name(), "etcd-server:n1");
        assert_eq!(grant.not_after(), NOW + time::Duration::days(90));

        // A root client certificate, once explicitly issued, renews as root.
        let root = Renewal {
            profile: "client",
            common_name: "root",
            sans: &[],
            ..renewal.clone()
        };
        assert_eq!(
            p.evaluate_renewal(&root, NOW, CA_NOT_AFTER)
                .unwrap()
                .common_name(),
            "root"
        );

        // A name the policy no longer allows is not renewed.
        let public = [San::parse_loose("8.8.8.8").unwrap()];
        let outside = Renewal {
            sans: &public,
            ..renewal.clone()
        };
        assert_eq!(
            p.evaluate_renewal(&outside, NOW, CA_NOT_AFTER)
                .unwrap_err()
                .code(),
            "san_not_allowed"
        );
    }

    fn file_error_of(text: &str) -> (usize, String, String) {
        match Policy::parse(text, Path::new("p.toml")).unwrap_err() {
            PolicyError::File {
                line, key, message, ..
            } => (line, key, message),
            other => panic!("expected a file error, got {other:?}"),
        }
    }

    #[test]
    fn file_errors_name_the_line_and_the_key() {
        let bad_value = DEFAULT_POLICY.replacen(
            "default_lifetime = \"90d\"",
            "default_lifetime = \"ninety days\"",
            1,
        );
        let line = bad_value
            .lines()
            .position(|l| l.contains("ninety"))
            .unwrap()
            + 1;
        let (got_line, key, message) = file_error_of(&bad_value);
        assert_eq!(got_line, line);
        assert_eq!(key, "profiles.server.default_lifetime");
        assert!(message.contains("ninety days"), "{message}");

        let unknown_key =
            DEFAULT_POLICY.replacen("include_node_ips = true", "include_node_ipz = true", 1);
        let (got_line, key, message) = file_error_of(&unknown_key);
        assert_eq!(
            got_line,
            unknown_key.lines().position(|l| l.contains("ipz")).unwrap() + 1
        );
        assert!(key.starts_with("profiles.server"), "{key}");
        assert!(message.contains("include_node_ipz"), "{message}");

        let short_max =
            DEFAULT_POLICY.replacen("max_lifetime = \"365d\"", "max_lifetime = \"30d\"", 1);
        let (got_line, key, _) = file_error_of(&short_max);
        assert_eq!(key, "profiles.server.max_lifetime");
        assert_eq!(
            got_line,
            short_max
                .lines()
                .position(|l| l.contains("\"30d\""))
                .unwrap()
                + 1
        );

        let (got_line, _, _) = file_error_of("[names\nip_ranges = []\n");
        assert_eq!(got_line, 1);
    }
}
