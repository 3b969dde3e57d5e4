//! What callers hand the authority and get back: requests, results, revocation reasons,
//! how a new CA key is kept.

use super::*;

/// RFC 5280 revocation reasons an operator may give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevocationReason {
    Unspecified,
    KeyCompromise,
    CaCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    PrivilegeWithdrawn,
}

impl RevocationReason {
    pub const NAMES: [&'static str; 7] = [
        "unspecified",
        "keyCompromise",
        "caCompromise",
        "affiliationChanged",
        "superseded",
        "cessationOfOperation",
        "privilegeWithdrawn",
    ];
    const ALL: [RevocationReason; 7] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn,
    ];

    /// The reason of an RFC 5280 reason code (those an operator may give; any other is
    /// `unspecified`).
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => RevocationReason::KeyCompromise,
            2 => RevocationReason::CaCompromise,
            3 => RevocationReason::AffiliationChanged,
            4 => RevocationReason::Superseded,
            5 => RevocationReason::CessationOfOperation,
            9 => RevocationReason::PrivilegeWithdrawn,
            _ => RevocationReason::Unspecified,
        }
    }

    pub fn name(self) -> &'static str {
        let index = Self::ALL.iter().position(|r| *r == self).unwrap_or(0);
        Self::NAMES[index]
    }

    pub(super) fn to_rcgen(self) -> rcgen::RevocationReason {
        match self {
            RevocationReason::Unspecified => rcgen::RevocationReason::Unspecified,
            RevocationReason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            RevocationReason::CaCompromise => rcgen::RevocationReason::CaCompromise,
            RevocationReason::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
            RevocationReason::Superseded => rcgen::RevocationReason::Superseded,
            RevocationReason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
            RevocationReason::PrivilegeWithdrawn => rcgen::RevocationReason::PrivilegeWithdrawn,
        }
    }
}

impl FromStr for RevocationReason {
    type Err = AuthorityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted: String = s
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|r| r.name().to_ascii_lowercase() == wanted)
            .ok_or_else(|| AuthorityError::UnknownReason {
                text: s.to_string(),
            })
    }
}

/// How to create a CA data dir.
pub struct InitOptions {
    pub key_type: KeyType,
    pub validity: Duration,
    pub common_name: String,
    /// The policy to install (its path for error messages, and its text).
    pub policy: Option<(PathBuf, String)>,
    /// An existing CA to adopt: certificate PEM and key PEM.
    pub import: Option<(String, String)>,
    /// How the CA key is kept on disk.
    pub key_protection: KeyProtection,
    /// A database several servers share (PostgreSQL) instead of the data dir's SQLite file:
    /// the CA's records and its sealed key go there.
    pub database: Option<StoreConfig>,
}

/// How CA keys are kept on disk.
#[derive(Clone, Debug)]
pub enum KeyProtection {
    /// Sealed with a passphrase (PBKDF2 with this many iterations, then AES-256-GCM).
    Passphrase(keyfile::Passphrase, u32),
    /// Plain PKCS#8, readable by whoever can read the file: only on explicit request.
    Unencrypted,
}

impl KeyProtection {
    /// The key file's text for a key.
    pub(super) fn key_file_text(
        &self,
        key: &KeyPair,
    ) -> Result<zeroize::Zeroizing<String>, AuthorityError> {
        match self {
            KeyProtection::Passphrase(passphrase, iterations) => Ok(zeroize::Zeroizing::new(
                keyfile::seal(key.serialized_der(), passphrase, *iterations)?,
            )),
            KeyProtection::Unencrypted => Ok(zeroize::Zeroizing::new(key.serialize_pem())),
        }
    }
}

/// What `init` created.
#[derive(Debug, Serialize)]
pub struct InitReport {
    pub data_dir: PathBuf,
    pub fingerprint: String,
    pub subject: String,
    pub key_type: String,
    pub imported: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub notes: Vec<String>,
}

/// An offline issuance request (from the admin CLI on the CA host).
#[derive(Clone, Debug)]
pub struct IssueRequest {
    pub profile: String,
    pub node: NodeName,
    pub ips: Vec<IpAddr>,
    pub dns_names: Vec<DnsName>,
    pub common_name: Option<String>,
    pub lifetime: Option<Duration>,
    pub key_type: KeyType,
    pub allow_privileged_common_name: bool,
}

/// A certificate that has been signed and recorded.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct IssuedCertificate {
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

impl IssuedCertificate {
    pub(super) fn from_record(record: &CertificateRecord) -> Self {
        Self {
            serial: record.serial.clone(),
            profile: record.profile.clone(),
            node: record.node.clone(),
            common_name: record.common_name.clone(),
            sans: record.sans.clone(),
            not_before: record.not_before,
            not_after: record.not_after,
            certificate_pem: record.pem.clone(),
        }
    }
}

/// A bootstrap token to create: the node identity it is bound to and what it may enroll.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub node: NodeName,
    pub ips: Vec<IpAddr>,
    pub dns_names: Vec<DnsName>,
    pub profiles: Vec<String>,
    pub common_name: Option<String>,
    pub ttl: Duration,
    pub allow_privileged_common_name: bool,
}

/// A token just created. `token` is the secret: shown once, never stored.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct CreatedToken {
    pub token: String,
    pub id: String,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub expires_at: Option<OffsetDateTime>,
    pub node: Option<String>,
    pub profiles: Vec<String>,
}

/// The public id of a token, when the text is shaped like one (for attempt limits).
pub fn token_id(text: &str) -> Option<&str> {
    tokens::parse(text).map(|(id, _)| id)
}

/// The most certificates a node renews beside the one it presents, in one request.
pub const MAX_SERIALS_PER_NODE: usize = 16;

/// The longest a bootstrap token may live: it is a boot-time credential.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// What an enrollment returns: one certificate per profile and the trust bundle.
#[derive(Clone, Debug, Serialize)]
pub struct Enrollment {
    pub node: String,
    pub certificates: BTreeMap<String, IssuedCertificate>,
    pub trust_bundle: String,
    /// True when this answers a retry of an enrollment that already succeeded.
    pub replayed: bool,
}

/// An admin token as `admin-token list` shows it: never its secret.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct AdminTokenView {
    pub id: String,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// Who is calling the admin API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminActor(pub String);

/// A certificate together with the private key generated for it (offline issue only).
pub struct IssuedWithKey {
    pub certificate: IssuedCertificate,
    pub key_pem: String,
}
