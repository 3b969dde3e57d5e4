//! The policy file: TOML as written (with defaults), validated into a [`Policy`], and errors
//! that name the file, the line and the key.

use super::*;

pub(super) fn line_of(text: &str, span: Option<Range<usize>>) -> usize {
    span.map_or(0, |s| {
        text[..s.start.min(text.len())].matches('\n').count() + 1
    })
}

pub(super) fn file_error(path: &Path, text: &str, key: &str, e: &toml::de::Error) -> PolicyError {
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
pub(super) struct PolicyFile {
    #[serde(default)]
    defaults: DefaultsFile,
    #[serde(default)]
    retention: RetentionFile,
    names: NamesFile,
    profiles: BTreeMap<String, Spanned<ProfileFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DefaultsFile {
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

/// `[retention]`: how long what is no longer needed is kept (see [`Retention`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetentionFile {
    #[serde(default = "default_expired_certificates")]
    expired_certificates: Spanned<HumanDuration>,
    #[serde(default = "default_tokens")]
    tokens: Spanned<HumanDuration>,
    #[serde(default = "default_audit_events")]
    audit_events: Spanned<HumanDuration>,
}

impl Default for RetentionFile {
    fn default() -> Self {
        Self {
            expired_certificates: default_expired_certificates(),
            tokens: default_tokens(),
            audit_events: default_audit_events(),
        }
    }
}

pub(super) fn default_expired_certificates() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration::from_secs(30 * 86400))
}
pub(super) fn default_tokens() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration::from_secs(30 * 86400))
}
pub(super) fn default_audit_events() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration::from_secs(400 * 86400))
}

pub(super) fn default_backdate() -> HumanDuration {
    HumanDuration::from_secs(300)
}
pub(super) fn default_crl_lifetime() -> HumanDuration {
    HumanDuration::from_secs(7 * 86400)
}
pub(super) fn default_server_lifetime() -> HumanDuration {
    HumanDuration::from_secs(365 * 86400)
}
pub(super) fn default_key_types() -> Vec<KeyType> {
    KeyType::ALL.to_vec()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NamesFile {
    ip_ranges: Vec<IpNet>,
    dns_names: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProfileFile {
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
    pub(super) fn validate(self, path: &Path, text: &str) -> Result<Policy, PolicyError> {
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
        // A window under a day is a slip, not a policy: `1m` is one minute, not a month, and
        // the server would remove the audit trail within the hour.
        let mut windows = Vec::new();
        for (field, window) in [
            ("expired_certificates", &self.retention.expired_certificates),
            ("tokens", &self.retention.tokens),
            ("audit_events", &self.retention.audit_events),
        ] {
            if window.get_ref().as_std() < Duration::from_secs(86400) {
                return Err(invalid(
                    window.span(),
                    format!("retention.{field}"),
                    format!(
                        "{} is shorter than a day: the server removes what is older within the hour (m is minutes; write 1months for a month)",
                        window.get_ref()
                    ),
                ));
            }
            windows.push(window.get_ref().as_std());
        }
        Ok(Policy {
            backdate: self.defaults.backdate.as_std(),
            crl_lifetime: self.defaults.crl_lifetime.as_std(),
            server_lifetime: self.defaults.server_lifetime.as_std(),
            retention: Retention {
                expired_certificates: windows[0],
                tokens: windows[1],
                audit_events: windows[2],
            },
            allowed_key_types: self.defaults.allowed_key_types,
            ip_ranges: self.names.ip_ranges,
            dns_names,
            profiles,
        })
    }
}
