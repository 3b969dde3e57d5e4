//! Every request and response body of the HTTP API, written once. The server deserializes what
//! the client (the agent, the CLI's remote mode) serializes, from the same types; no JSON is
//! built by hand elsewhere, and no store row goes on the wire: the server turns its own records
//! into these types (the `From` impls at the end), so a schema change is not a protocol change.
//!
//! Request bodies refuse unknown fields (a misspelt field is a 400, not silently ignored).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Declares [`ErrorCode`] with the text of each code, written once.
macro_rules! error_codes {
    ($($variant:ident => $text:literal,)*) => {
        /// Every code a refusal of the API carries (`ErrorBody::code`): stable and
        /// machine-readable, so clients act on the variant, not on the message.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            /// Every code, in order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as it goes on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)*
                }
            }

            /// The code for its wire text; None for a code this version does not know.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(ErrorCode::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    AdminRequired => "admin_required",
    AdminTokenInvalid => "admin_token_invalid",
    AdminTokenUnknown => "admin_token_unknown",
    AlreadyRevoked => "already_revoked",
    BodyInvalid => "body_invalid",
    BodyTooLarge => "body_too_large",
    ClientCertificateExpired => "client_certificate_expired",
    ClientCertificateRequired => "client_certificate_required",
    ClientCertificateRevoked => "client_certificate_revoked",
    ClientCertificateUnknown => "client_certificate_unknown",
    ClientCertificateUntrusted => "client_certificate_untrusted",
    CommonNameFixed => "common_name_fixed",
    CommonNameInvalid => "common_name_invalid",
    CommonNamePrivileged => "common_name_privileged",
    CommonNameRequired => "common_name_required",
    CommonNameReserved => "common_name_reserved",
    ContentTypeUnsupported => "content_type_unsupported",
    CsrMalformed => "csr_malformed",
    CsrMissing => "csr_missing",
    CsrSignatureInvalid => "csr_signature_invalid",
    CsrSignatureWeak => "csr_signature_weak",
    DatabaseReadOnly => "database_read_only",
    DatabaseUnavailable => "database_unavailable",
    GenerationUnknown => "generation_unknown",
    Internal => "internal",
    IssuerExpired => "issuer_expired",
    KeyTypeNotAllowed => "key_type_not_allowed",
    KeyTypeUnsupported => "key_type_unsupported",
    LeaseHeld => "lease_held",
    MemberCertificateRequired => "member_certificate_required",
    MethodNotAllowed => "method_not_allowed",
    NameInvalid => "name_invalid",
    NamesRequired => "names_required",
    NodeMismatch => "node_mismatch",
    NodeReserved => "node_reserved",
    NotConverged => "not_converged",
    NotFound => "not_found",
    PolicyChanged => "policy_changed",
    PolicyFileInvalid => "policy_file_invalid",
    ProfileNotAllowed => "profile_not_allowed",
    ProfilesRequired => "profiles_required",
    QueryInvalid => "query_invalid",
    ReasonUnknown => "reason_unknown",
    RequestTimeout => "request_timeout",
    RotationPhase => "rotation_phase",
    SanNotAllowed => "san_not_allowed",
    SanOutsideIdentity => "san_outside_identity",
    SerialInvalid => "serial_invalid",
    SerialUnknown => "serial_unknown",
    TokenExpired => "token_expired",
    TokenInvalid => "token_invalid",
    TokenLocked => "token_locked",
    TokenUsed => "token_used",
    TooManyAttempts => "too_many_attempts",
    TooManySerials => "too_many_serials",
    TtlTooLong => "ttl_too_long",
    UnknownProfile => "unknown_profile",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: `code` is stable and machine-readable (an [`ErrorCode`]; kept as text so a code
/// from a newer server still reaches the user), `message` is for people.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// A certificate the CA signed and recorded, as handed to the node it is for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    pub serial: String,
    pub profile: String,
    pub node: String,
    pub common_name: String,
    pub sans: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub certificate_pem: String,
}

/// The answer to `POST /v1/enroll`: one certificate per profile and the trust bundle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Enrollment {
    pub node: String,
    pub certificates: BTreeMap<String, Certificate>,
    pub trust_bundle: String,
    /// True when this answers a retry of an enrollment that already succeeded.
    pub replayed: bool,
}

/// A recorded certificate as the admin API lists it (`GET /v1/certs`, `/v1/certs/{serial}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CertificateInfo {
    pub serial: String,
    pub ca_generation: i64,
    pub profile: String,
    pub node: String,
    pub subject: String,
    pub common_name: String,
    pub sans: Vec<String>,
    pub key_type: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// valid, superseded, retired, revoked or expired.
    pub status: String,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub revoked_at: Option<OffsetDateTime>,
    pub revocation_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    pub renewed_from: Option<String>,
    pub pem: String,
}

/// One line of the audit trail (`GET /v1/audit`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub node: Option<String>,
    pub serial: Option<String>,
    pub detail: String,
}

/// The answer to revoking an admin token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdminTokenRevoked {
    pub id: String,
    pub revoked: bool,
}

/// A CA generation as the rotation status shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RotationGeneration {
    pub id: i64,
    pub fingerprint: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

/// One node's state in a rotation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RotationNode {
    pub node: String,
    /// Runs etcd (holds a server or peer certificate), so it restarts to trust a new CA.
    pub member: bool,
    /// Generations in the bundle its agent installed / etcd runs with (None: no report).
    pub installed_bundle: Option<Vec<i64>>,
    pub running_bundle: Option<Vec<i64>>,
    /// For each profile, the generation that signed its newest valid certificate.
    pub certificates: BTreeMap<String, i64>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub reported_at: Option<OffsetDateTime>,
    /// Not reported since the last rotation step.
    pub stale: bool,
    /// What it still has to do before the next step.
    pub waiting_for: Option<String>,
}

/// The last rotation step taken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RotationStep {
    /// `start`, `activate`, `finish` or `abort`.
    pub step: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub outcome: String,
}

/// Where a CA rotation stands (`GET /v1/rotation`, and the answer to every step).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RotationStatus {
    /// `idle`, `started` or `activated`.
    pub phase: String,
    pub active: RotationGeneration,
    /// The generation being introduced (started) or retired (activated).
    pub other: Option<RotationGeneration>,
    pub nodes: Vec<RotationNode>,
    /// The next step, and the nodes it waits for.
    pub next_step: Option<String>,
    pub blocked_by: Vec<String>,
    /// Who holds the restart lease, and until when.
    pub restart_lease: Option<(String, String)>,
    pub last_step: Option<RotationStep>,
}

/// An admin token as `admin-token list` shows it: never its secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdminTokenInfo {
    pub id: String,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub revoked_at: Option<OffsetDateTime>,
}

/// Response headers of `GET /v1/backup` with what the archive holds.
pub const BACKUP_GENERATIONS: &str = "etcd-ca-backup-generations";
pub const BACKUP_CERTIFICATES: &str = "etcd-ca-backup-certificates";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub ca_fingerprint: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CrlQuery {
    /// A trusted generation's number: its own CRL instead of etcd's.
    pub generation: Option<i64>,
    /// A trusted generation's CA fingerprint (`sha256:HEX`): the same, addressed as agents can.
    pub ca: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    /// The version the agent last saw; absent on its first call.
    pub version: Option<String>,
    /// How long to wait for a change (default and maximum 25s).
    pub wait: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WatchAnswer {
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollBody {
    pub token: String,
    /// The node the caller means to enroll as (optional): a token for another node is refused.
    pub node: Option<String>,
    /// One PEM CSR per profile.
    pub csrs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RenewBody {
    /// A CSR for a new key (re-key). Its names are ignored.
    pub csr: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RenewNodeBody {
    /// Other certificates of the same node to renew, by serial.
    #[serde(default)]
    pub serials: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RenewedNode {
    pub certificates: Vec<Certificate>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignBody {
    pub profile: String,
    pub node: String,
    pub csr: String,
    /// The node's names; without them, the CSR's names are taken as the node's.
    pub ips: Option<Vec<String>>,
    pub dns_names: Option<Vec<String>>,
    pub common_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    pub node: String,
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub dns_names: Vec<String>,
    pub profiles: Vec<String>,
    pub common_name: Option<String>,
    /// Default 30m.
    pub ttl: Option<String>,
    #[serde(default)]
    pub allow_root: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub token: String,
    pub id: String,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub expires_at: Option<OffsetDateTime>,
    pub node: Option<String>,
    pub profiles: Vec<String>,
    pub ca_fingerprint: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CertsQuery {
    pub node: Option<String>,
    pub profile: Option<String>,
    pub status: Option<String>,
    pub expiring_within: Option<String>,
    /// At most this many per page (default and maximum 1000).
    pub limit: Option<u32>,
    /// The `next` of the previous page.
    pub after: Option<String>,
}

/// `POST /v1/tidy`: remove what is past its retention (or only count it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TidyBody {
    #[serde(default)]
    pub dry_run: bool,
}

/// What a tidy run removed (or would remove), and where each kind's retention ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TidyAnswer {
    pub dry_run: bool,
    pub certificates: u64,
    pub tokens: u64,
    pub audit_events: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub certificates_expired_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub tokens_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub audit_events_before: OffsetDateTime,
}

impl From<crate::authority::TidyReport> for TidyAnswer {
    fn from(r: crate::authority::TidyReport) -> Self {
        Self {
            dry_run: r.dry_run,
            certificates: r.removed.certificates,
            tokens: r.removed.tokens,
            audit_events: r.removed.audit_events,
            certificates_expired_before: r.cutoffs.certificates,
            tokens_before: r.cutoffs.tokens,
            audit_events_before: r.cutoffs.audit_events,
        }
    }
}

/// One page of `GET /v1/certs`, soonest expiry first. `next`, when present, is the `after` of
/// the following page; a listing is complete when a page has none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CertificatePage {
    pub certificates: Vec<CertificateInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueBody {
    pub profile: String,
    pub node: String,
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub dns_names: Vec<String>,
    pub common_name: Option<String>,
    pub lifetime: Option<String>,
    pub key_type: Option<String>,
    #[serde(default)]
    pub allow_root: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IssueResponse {
    pub certificate: Certificate,
    pub private_key_pem: String,
    pub trust_bundle: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub limit: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    pub installed_bundle: Vec<String>,
    pub running_bundle: Vec<String>,
    #[serde(default)]
    pub certificates: BTreeMap<String, String>,
    /// How the agent is doing (absent from agents before this field existed).
    #[serde(default)]
    pub agent: Option<AgentHealth>,
    /// What the member serves, by profile (`server` on the client port, `peer` on the peer
    /// port), as the agent's probe found it.
    #[serde(default)]
    pub served: BTreeMap<String, Served>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub node: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    #[serde(default)]
    pub force: bool,
    pub key_type: Option<String>,
}

/// A label value as Prometheus's text exposition writes it (the server's `/metrics` and the
/// agent's textfile).
pub fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Appends one gauge family to a Prometheus text exposition: its HELP and TYPE lines, then a
/// sample per `(labels, value)` (labels already written as `name="value",...`), each written
/// as it comes (a fleet's 30,000 samples are never all held at once).
pub fn gauge_family<L: std::fmt::Display>(
    out: &mut String,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, i64)>,
) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

// ---- from the server's records ----

impl From<crate::authority::IssuedCertificate> for Certificate {
    fn from(c: crate::authority::IssuedCertificate) -> Self {
        Self {
            serial: c.serial,
            profile: c.profile,
            node: c.node,
            common_name: c.common_name,
            sans: c.sans,
            not_before: c.not_before,
            not_after: c.not_after,
            certificate_pem: c.certificate_pem,
        }
    }
}

impl From<crate::authority::Enrollment> for Enrollment {
    fn from(e: crate::authority::Enrollment) -> Self {
        Self {
            node: e.node,
            certificates: e
                .certificates
                .into_iter()
                .map(|(profile, c)| (profile, c.into()))
                .collect(),
            trust_bundle: e.trust_bundle,
            replayed: e.replayed,
        }
    }
}

impl From<crate::store::CertificateRecord> for CertificateInfo {
    fn from(r: crate::store::CertificateRecord) -> Self {
        Self {
            serial: r.serial,
            ca_generation: r.ca_generation,
            profile: r.profile,
            node: r.node,
            subject: r.subject,
            common_name: r.common_name,
            sans: r.sans,
            key_type: r.key_type,
            not_before: r.not_before,
            not_after: r.not_after,
            status: r.state.as_str().to_string(),
            revoked_at: r.revoked_at,
            revocation_reason: r.revocation_reason,
            issued_at: r.issued_at,
            renewed_from: r.renewed_from,
            pem: r.pem,
        }
    }
}

impl From<crate::store::AuditEvent> for AuditEntry {
    fn from(e: crate::store::AuditEvent) -> Self {
        Self {
            at: e.at,
            actor: e.actor,
            action: e.action,
            node: e.node,
            serial: e.serial,
            detail: e.detail,
        }
    }
}

impl From<crate::authority::rotation::GenerationView> for RotationGeneration {
    fn from(g: crate::authority::rotation::GenerationView) -> Self {
        Self {
            id: g.id,
            fingerprint: g.fingerprint,
            not_after: g.not_after,
        }
    }
}

impl From<crate::authority::rotation::RotationStatus> for RotationStatus {
    fn from(s: crate::authority::rotation::RotationStatus) -> Self {
        Self {
            phase: s.phase.to_string(),
            active: s.active.into(),
            other: s.other.map(Into::into),
            nodes: s
                .nodes
                .into_iter()
                .map(|n| RotationNode {
                    node: n.node,
                    member: n.member,
                    installed_bundle: n.installed_bundle,
                    running_bundle: n.running_bundle,
                    certificates: n.certificates,
                    reported_at: n.reported_at,
                    stale: n.stale,
                    waiting_for: n.waiting_for,
                })
                .collect(),
            next_step: s.next_step.map(str::to_string),
            blocked_by: s.blocked_by,
            restart_lease: s.restart_lease,
            last_step: s.last_step.map(|l| RotationStep {
                step: l.step.to_string(),
                at: l.at,
                outcome: l.outcome,
            }),
        }
    }
}

impl From<crate::authority::AdminTokenView> for AdminTokenInfo {
    fn from(t: crate::authority::AdminTokenView) -> Self {
        Self {
            id: t.id,
            created_by: t.created_by,
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
        }
    }
}

mod fleet;
pub use fleet::*;

#[cfg(test)]
mod tests;
