//! X.509 and key plumbing: key types and generation, private-key import (PKCS#8, SEC1, PKCS#1),
//! PEM handling, fingerprints, and a readable summary of any certificate.
//!
//! Nothing here decides what may be signed (that is [`crate::policy`]) and nothing here signs
//! a leaf (that is [`crate::authority`]); these are the shared mechanics both stand on.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rcgen::{KeyPair, SignatureAlgorithm};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::SubjectPublicKeyInfo;

/// Errors from parsing or converting keys and certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("no PEM {label} block found")]
    NoPem { label: &'static str },
    #[error("malformed PEM: {0}")]
    Pem(String),
    #[error("malformed certificate: {0}")]
    Certificate(String),
    #[error("unsupported private key format {label:?} (expected PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)")]
    KeyFormat { label: String },
    #[error("the private key is encrypted; decrypt it first (openssl pkcs8 -topk8 -nocrypt)")]
    EncryptedKey,
    #[error("unsupported public key algorithm {oid} (supported: ECDSA P-256, ECDSA P-384, Ed25519, RSA)")]
    UnsupportedKeyAlgorithm { oid: String },
    #[error("cannot use the private key as {key_type}: {reason}")]
    KeyRejected { key_type: KeyType, reason: String },
    #[error("cannot generate {key_type} keys here; supported for new keys: ecdsa-p256, ecdsa-p384, ed25519")]
    CannotGenerate { key_type: KeyType },
    #[error("key generation failed: {0}")]
    Generate(String),
    #[error("malformed CSR: {0}")]
    Csr(String),
    #[error("not a valid DER CRL: {0}")]
    Crl(String),
    #[error("the CSR's signature does not verify: it was not made with the key it carries")]
    CsrSignature,
    #[error("the CSR is signed with {algorithm}, which is broken: sign it with SHA-256 or better")]
    WeakSignature { algorithm: &'static str },
    #[error("RSA keys must have at least 2048 bits (this one has {bits})")]
    RsaTooSmall { bits: usize },
    #[error(
        "the CSR asks for a {kind} name ({value}); only DNS names and IP addresses are issued"
    )]
    UnsupportedSan { kind: &'static str, value: String },
}

/// The key algorithms etcd-ca understands (etcd 3.4 accepts all of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
    Rsa,
}

impl KeyType {
    pub const ALL: [KeyType; 4] = [
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Ed25519,
        KeyType::Rsa,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa => "rsa",
        }
    }

    /// The signature algorithm a key of this type signs with (SHA-256 for RSA, never SHA-1).
    pub fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
            KeyType::Rsa => &rcgen::PKCS_RSA_SHA256,
        }
    }

    /// A fresh private key. RSA keys cannot be generated with ring; they can only be imported.
    pub fn generate(self) -> Result<KeyPair, PkiError> {
        if self == KeyType::Rsa {
            return Err(PkiError::CannotGenerate { key_type: self });
        }
        KeyPair::generate_for(self.algorithm()).map_err(|e| PkiError::Generate(e.to_string()))
    }

    /// The key type of a subject public key, as found in a certificate or a CSR.
    pub fn of_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, PkiError> {
        let alg = &spki.algorithm.algorithm;
        if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            return match curve {
                Some(c) if c == OID_EC_P256 => Ok(KeyType::EcdsaP256),
                Some(c) if c == OID_NIST_EC_P384 => Ok(KeyType::EcdsaP384),
                other => Err(PkiError::UnsupportedKeyAlgorithm {
                    oid: format!(
                        "id-ecPublicKey with curve {}",
                        other.map_or("(none)".into(), |c| c.to_id_string())
                    ),
                }),
            };
        }
        if *alg == OID_SIG_ED25519 {
            return Ok(KeyType::Ed25519);
        }
        if *alg == OID_PKCS1_RSAENCRYPTION {
            return Ok(KeyType::Rsa);
        }
        Err(PkiError::UnsupportedKeyAlgorithm {
            oid: alg.to_id_string(),
        })
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.to_ascii_lowercase();
        let alias = match wanted.as_str() {
            "p256" => "ecdsa-p256",
            "p384" => "ecdsa-p384",
            other => other,
        };
        KeyType::ALL
            .into_iter()
            .find(|k| k.name() == alias)
            .ok_or_else(|| {
                format!("unknown key type {s:?} (known: ecdsa-p256, ecdsa-p384, ed25519, rsa)")
            })
    }
}

impl Serialize for KeyType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for KeyType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `sha256:` and the lower-case hex SHA-256 of a DER certificate: how nodes pin the CA.
pub fn fingerprint(der: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex::encode(ring::digest::digest(&ring::digest::SHA256, der))
    )
}

/// Lower-case hex SHA-256 of arbitrary bytes (public keys, token hashes).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// Every `CERTIFICATE` block of a PEM text, in order, as DER. Other blocks are skipped.
pub fn pem_certificates(text: &str) -> Result<Vec<Vec<u8>>, PkiError> {
    let blocks = pem::parse_many(text).map_err(|e| PkiError::Pem(e.to_string()))?;
    let ders: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect();
    if ders.is_empty() {
        return Err(PkiError::NoPem {
            label: "CERTIFICATE",
        });
    }
    Ok(ders)
}

/// PEM text for one DER certificate, with LF line endings (the `pem` crate defaults to CRLF).
pub fn certificate_pem(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Parses a DER certificate, refusing trailing bytes.
pub fn parse_certificate(der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| PkiError::Certificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(PkiError::Certificate(
            "trailing bytes after the certificate".into(),
        ));
    }
    Ok(cert)
}

/// Checks that `der` is a whole, well-formed DER CRL: etcd refuses every connection when its
/// CRL file is not one, so nothing else may ever be written where it reads.
pub fn check_crl_der(der: &[u8]) -> Result<(), PkiError> {
    use x509_parser::revocation_list::CertificateRevocationList;
    match CertificateRevocationList::from_der(der) {
        Ok(([], _)) => Ok(()),
        Ok(_) => Err(PkiError::Crl("trailing bytes after the CRL".into())),
        Err(e) => Err(PkiError::Crl(e.to_string())),
    }
}

/// A CRL's contents as a restore re-applies them.
#[derive(Clone, Debug)]
pub struct CrlContents {
    pub number: Option<u64>,
    pub this_update: OffsetDateTime,
    pub next_update: Option<OffsetDateTime>,
    /// Each revoked serial (hex, as [`serial_hex`] writes it), when, and the RFC 5280 reason
    /// code (0 when the CRL gives none).
    pub revoked: Vec<(String, OffsetDateTime, u8)>,
}

/// Reads a CRL, DER (etcd's `ca.crl`) or PEM.
pub fn crl_contents(bytes: &[u8]) -> Result<(Vec<u8>, CrlContents), PkiError> {
    use x509_parser::revocation_list::CertificateRevocationList;
    let der = match pem::parse(bytes) {
        Ok(block) if block.tag() == "X509 CRL" => block.into_contents(),
        Ok(block) => {
            return Err(PkiError::Crl(format!(
                "a PEM {} block, not a CRL",
                block.tag()
            )))
        }
        Err(_) => bytes.to_vec(),
    };
    check_crl_der(&der)?;
    let (_, crl) =
        CertificateRevocationList::from_der(&der).map_err(|e| PkiError::Crl(e.to_string()))?;
    let revoked = crl
        .iter_revoked_certificates()
        .map(|r| {
            let reason = r.reason_code().map(|(_, code)| code.0).unwrap_or(0);
            (
                hex::encode(r.raw_serial()),
                r.revocation_date.to_datetime(),
                reason,
            )
        })
        .collect();
    let contents = CrlContents {
        number: crl.crl_number().and_then(|n| u64::try_from(n).ok()),
        this_update: crl.last_update().to_datetime(),
        next_update: crl.next_update().map(|t| t.to_datetime()),
        revoked,
    };
    Ok((der, contents))
}

/// True when `ca_der` signed the DER CRL `crl_der`: the CRL's raw issuer is the CA's raw subject
/// (how RFC 5280 checkers pick a certificate's CRL) and its signature verifies with the CA's key.
pub fn crl_issued_by(crl_der: &[u8], ca_der: &[u8]) -> bool {
    use x509_parser::revocation_list::CertificateRevocationList;
    let Ok(([], crl)) = CertificateRevocationList::from_der(crl_der) else {
        return false;
    };
    parse_certificate(ca_der).is_ok_and(|ca| {
        ca.subject().as_raw() == crl.issuer().as_raw()
            && crl.verify_signature(ca.public_key()).is_ok()
    })
}

/// True when `ca_der` issued `cert`: the CA's raw subject is the certificate's raw issuer (how
/// TLS libraries find the issuer) and the signature verifies with the CA's key.
pub fn is_issued_by(cert: &X509Certificate<'_>, ca_der: &[u8]) -> bool {
    parse_certificate(ca_der).is_ok_and(|ca| {
        ca.subject().as_raw() == cert.issuer().as_raw()
            && cert.verify_signature(Some(ca.public_key())).is_ok()
    })
}

/// A CA fingerprint as etcd-ca writes it (`sha256:` and 64 lowercase hex digits) from the ways
/// people copy one: ours, bare hex, or openssl's `SHA256 Fingerprint=AB:CD:...` (colons, any
/// case). None when it is not 32 bytes of hex.
pub fn parse_fingerprint(text: &str) -> Option<String> {
    let text = text.trim();
    let hex_part = [
        "sha256:",
        "SHA256:",
        "sha256 Fingerprint=",
        "SHA256 Fingerprint=",
    ]
    .iter()
    .find_map(|prefix| text.strip_prefix(prefix))
    .unwrap_or(text)
    .replace(':', "");
    (hex_part.len() == 64 && hex_part.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("sha256:{}", hex_part.to_ascii_lowercase()))
}

/// Loads a PEM private key of the given type: PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`,
/// what kubeadm and Go write) or PKCS#1 (`RSA PRIVATE KEY`, what cfssl and older openssl write).
pub fn load_private_key(pem_text: &str, key_type: KeyType) -> Result<KeyPair, PkiError> {
    let block = pem::parse_many(pem_text)
        .map_err(|e| PkiError::Pem(e.to_string()))?
        .into_iter()
        .find(|b| b.tag().ends_with("PRIVATE KEY"))
        .ok_or(PkiError::NoPem {
            label: "PRIVATE KEY",
        })?;
    let pkcs8 = match block.tag() {
        "PRIVATE KEY" => block.into_contents(),
        "ENCRYPTED PRIVATE KEY" => return Err(PkiError::EncryptedKey),
        "EC PRIVATE KEY" => {
            let curve: &[u64] = match key_type {
                KeyType::EcdsaP256 => &[1, 2, 840, 10045, 3, 1, 7],
                KeyType::EcdsaP384 => &[1, 3, 132, 0, 34],
                _ => {
                    return Err(PkiError::KeyRejected {
                        key_type,
                        reason: "an EC PRIVATE KEY cannot be this key type".into(),
                    })
                }
            };
            wrap_pkcs8(&[1, 2, 840, 10045, 2, 1], Some(curve), block.contents())
        }
        "RSA PRIVATE KEY" => wrap_pkcs8(&[1, 2, 840, 113549, 1, 1, 1], None, block.contents()),
        other => {
            return Err(PkiError::KeyFormat {
                label: other.to_string(),
            })
        }
    };
    KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.as_slice().into(), key_type.algorithm()).map_err(
        |e| PkiError::KeyRejected {
            key_type,
            reason: e.to_string(),
        },
    )
}

/// Wraps a SEC1 or PKCS#1 private key in a PKCS#8 PrivateKeyInfo (RFC 5208), which is what
/// ring accepts.
fn wrap_pkcs8(algorithm: &[u64], curve: Option<&[u64]>, inner: &[u8]) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_u8(0);
            w.next().write_sequence(|w| {
                w.next()
                    .write_oid(&yasna::models::ObjectIdentifier::from_slice(algorithm));
                match curve {
                    Some(c) => w
                        .next()
                        .write_oid(&yasna::models::ObjectIdentifier::from_slice(c)),
                    None => w.next().write_null(),
                }
            });
            w.next().write_bytes(inner);
        })
    })
}

/// True when `key` is the private half of the certificate's public key.
pub fn key_matches_certificate(key: &KeyPair, cert: &X509Certificate<'_>) -> bool {
    key.public_key_raw() == cert.public_key().subject_public_key.data.as_ref()
}

/// Subject alternative names of any certificate, as `DNS:`/`IP:`/other strings.
pub fn certificate_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::DNSName(d) => format!("DNS:{d}"),
            GeneralName::IPAddress(bytes) => match ip_from_bytes(bytes) {
                Some(ip) => format!("IP:{ip}"),
                None => format!("IP:{}", hex::encode(bytes)),
            },
            GeneralName::RFC822Name(e) => format!("email:{e}"),
            GeneralName::URI(u) => format!("URI:{u}"),
            other => format!("{other:?}"),
        })
        .collect()
}

/// An IP address from the raw bytes of an iPAddress general name.
pub fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// Extended key usages by their usual names.
pub fn certificate_ekus(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(ext)) = cert.extended_key_usage() else {
        return Vec::new();
    };
    let eku = ext.value;
    let mut out = Vec::new();
    for (set, name) in [
        (eku.any, "any"),
        (eku.server_auth, "serverAuth"),
        (eku.client_auth, "clientAuth"),
        (eku.code_signing, "codeSigning"),
        (eku.email_protection, "emailProtection"),
        (eku.time_stamping, "timeStamping"),
        (eku.ocsp_signing, "ocspSigning"),
    ] {
        if set {
            out.push(name.to_string());
        }
    }
    out.extend(eku.other.iter().map(|o| o.to_id_string()));
    out
}

/// Lower-case hex of a certificate's serial number, as etcd-ca prints and accepts it.
pub fn serial_hex(cert: &X509Certificate<'_>) -> String {
    hex::encode(cert.raw_serial())
}

/// A CSR whose signature verified: the public key and the names it asks for. Nothing else in a
/// CSR is trusted or used (extensions such as key usages or basic constraints are ignored).
#[derive(Clone, Debug)]
pub struct VerifiedCsr {
    /// DER SubjectPublicKeyInfo of the requested key.
    pub public_key: Vec<u8>,
    pub key_type: KeyType,
    pub sans: Vec<crate::names::San>,
    pub common_name: Option<String>,
}

/// Signature algorithms refused in a CSR (SHA-1 and MD5 based), by OID.
const WEAK_SIGNATURES: &[(&str, &str)] = &[
    ("1.2.840.113549.1.1.4", "md5WithRSAEncryption"),
    ("1.2.840.113549.1.1.5", "sha1WithRSAEncryption"),
    ("1.3.14.3.2.29", "sha1WithRSAEncryption"),
    ("1.2.840.10045.4.1", "ecdsa-with-SHA1"),
    ("1.2.840.10040.4.3", "dsa-with-SHA1"),
];

impl VerifiedCsr {
    /// Parses a PEM CSR (`CERTIFICATE REQUEST` or `NEW CERTIFICATE REQUEST`) and checks its
    /// signature, key type and names.
    pub fn from_pem(text: &str) -> Result<Self, PkiError> {
        let block = pem::parse_many(text)
            .map_err(|e| PkiError::Pem(e.to_string()))?
            .into_iter()
            .find(|b| b.tag() == "CERTIFICATE REQUEST" || b.tag() == "NEW CERTIFICATE REQUEST")
            .ok_or(PkiError::NoPem {
                label: "CERTIFICATE REQUEST",
            })?;
        Self::from_der(block.contents())
    }

    pub fn from_der(der: &[u8]) -> Result<Self, PkiError> {
        use x509_parser::certification_request::X509CertificationRequest;
        use x509_parser::extensions::ParsedExtension;
        use x509_parser::public_key::PublicKey;

        let (rest, csr) =
            X509CertificationRequest::from_der(der).map_err(|e| PkiError::Csr(e.to_string()))?;
        if !rest.is_empty() {
            return Err(PkiError::Csr("trailing bytes after the CSR".into()));
        }
        let info = &csr.certification_request_info;
        let spki = &info.subject_pki;
        let key_type = KeyType::of_spki(spki)?;
        if key_type == KeyType::Rsa {
            if let Ok(PublicKey::RSA(rsa)) = spki.parsed() {
                let bits = rsa.key_size();
                if bits < 2048 {
                    return Err(PkiError::RsaTooSmall { bits });
                }
            }
        }
        let algorithm = csr.signature_algorithm.algorithm.to_id_string();
        if let Some((_, name)) = WEAK_SIGNATURES.iter().find(|(oid, _)| *oid == algorithm) {
            return Err(PkiError::WeakSignature { algorithm: name });
        }
        csr.verify_signature().map_err(|_| PkiError::CsrSignature)?;

        let mut sans = Vec::new();
        if let Some(extensions) = csr.requested_extensions() {
            for ext in extensions {
                let ParsedExtension::SubjectAlternativeName(san) = ext else {
                    continue;
                };
                for name in &san.general_names {
                    let parsed = match name {
                        GeneralName::DNSName(d) => d
                            .parse()
                            .map(crate::names::San::Dns)
                            .map_err(|e: crate::names::NameError| PkiError::Csr(e.to_string()))?,
                        GeneralName::IPAddress(bytes) => {
                            crate::names::San::Ip(ip_from_bytes(bytes).ok_or_else(|| {
                                PkiError::Csr("an IP address SAN of the wrong length".into())
                            })?)
                        }
                        GeneralName::RFC822Name(v) => {
                            return Err(PkiError::UnsupportedSan {
                                kind: "email",
                                value: v.to_string(),
                            })
                        }
                        GeneralName::URI(v) => {
                            return Err(PkiError::UnsupportedSan {
                                kind: "URI",
                                value: v.to_string(),
                            })
                        }
                        other => {
                            return Err(PkiError::UnsupportedSan {
                                kind: "other",
                                value: format!("{other:?}"),
                            })
                        }
                    };
                    if !sans.contains(&parsed) {
                        sans.push(parsed);
                    }
                }
            }
        }
        let common_name = info
            .subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        Ok(Self {
            public_key: spki.raw.to_vec(),
            key_type,
            sans,
            common_name,
        })
    }
}

/// What an operator wants to know about any certificate file, ours or not.
#[derive(Clone, Debug, Serialize)]
pub struct CertSummary {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub sans: Vec<String>,
    pub extended_key_usages: Vec<String>,
    pub is_ca: bool,
    pub key_type: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub fingerprint: String,
}

impl CertSummary {
    pub fn from_der(der: &[u8]) -> Result<Self, PkiError> {
        let cert = parse_certificate(der)?;
        Ok(Self {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: serial_hex(&cert),
            sans: certificate_sans(&cert),
            extended_key_usages: certificate_ekus(&cert),
            is_ca: cert.is_ca(),
            key_type: KeyType::of_spki(cert.public_key())
                .map(|k| k.name().to_string())
                .unwrap_or_else(|_| cert.public_key().algorithm.algorithm.to_id_string()),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            fingerprint: fingerprint(der),
        })
    }

    /// Days until expiry as a person reads them, negative once expired.
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        crate::duration::days_left(self.not_after, now)
    }
}

/// The three signature checks of a rustls certificate verifier (of servers or of clients),
/// done with the supported algorithms at `self.FIELD`: written once for every verifier of ours.
macro_rules! signature_checks {
    ($($field:ident).+) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.$($field).+)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.$($field).+)
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.$($field).+.supported_schemes()
        }
    };
}
pub(crate) use signature_checks;

/// The provider every TLS endpoint of etcd-ca uses: ring's defaults, with TLS 1.3's
/// AES-128-GCM-SHA256 first (as Go's crypto/tls orders them): a handshake's transcript hash
/// and key schedule in SHA-256 instead of SHA-384, which ring computes more slowly.
pub fn tls_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    std::sync::Arc::new(provider)
}

/// The system random number generator failed (no entropy to be had: nothing can be made).
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

/// `N` bytes from the system's secure random number generator: the one place etcd-ca draws
/// randomness (serials, token secrets, key-file salts and nonces, passphrases, jitter).
pub fn random_bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut bytes = [0u8; N];
    fill_random(&mut bytes)?;
    Ok(bytes)
}

/// Fills `buf` in place from the same generator (for secrets kept in zeroizing buffers).
pub fn fill_random(buf: &mut [u8]) -> Result<(), RandomError> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(buf)
        .map_err(|_| RandomError)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed CA named `cn`, its DER and an issuer that signs as it.
    fn test_ca(cn: &str) -> (Vec<u8>, rcgen::Issuer<'static, KeyPair>) {
        let key = KeyType::EcdsaP256.generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).unwrap();
        (cert.der().to_vec(), rcgen::Issuer::new(params, key))
    }

    fn empty_crl(issuer: &rcgen::Issuer<'static, KeyPair>) -> Vec<u8> {
        let now = OffsetDateTime::now_utc();
        rcgen::CertificateRevocationListParams {
            this_update: now,
            next_update: now + time::Duration::days(1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(issuer)
        .unwrap()
        .der()
        .to_vec()
    }

    #[test]
    fn a_crl_is_issued_by_the_ca_that_signed_it_only() {
        let (first, first_issuer) = test_ca("etcd-ca generation 1");
        let (second, _) = test_ca("etcd-ca generation 2");
        let (impostor, impostor_issuer) = test_ca("etcd-ca generation 1");
        let crl = empty_crl(&first_issuer);
        assert!(crl_issued_by(&crl, &first));
        assert!(!crl_issued_by(&crl, &second), "another name");
        assert!(!crl_issued_by(&crl, &impostor), "same name, another key");
        assert!(!crl_issued_by(&empty_crl(&impostor_issuer), &first));
        assert!(!crl_issued_by(&crl[..crl.len() - 1], &first));
        assert!(!crl_issued_by(&crl, b"not a certificate"));
    }

    #[test]
    fn key_types_round_trip_their_names() {
        for k in KeyType::ALL {
            assert_eq!(k.name().parse::<KeyType>().unwrap(), k);
        }
        assert_eq!("p384".parse::<KeyType>().unwrap(), KeyType::EcdsaP384);
        assert!("dsa".parse::<KeyType>().is_err());
    }

    #[test]
    fn generated_keys_reload_from_pkcs8() {
        for k in [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Ed25519] {
            let key = k.generate().unwrap();
            let again = load_private_key(&key.serialize_pem(), k).unwrap();
            assert_eq!(key.public_key_raw(), again.public_key_raw());
        }
        assert!(KeyType::Rsa.generate().is_err());
    }

    #[test]
    fn sec1_keys_are_wrapped_for_ring() {
        // A SEC1 key is the inner OCTET STRING of the PKCS#8 form ring writes for ECDSA.
        let key = KeyType::EcdsaP256.generate().unwrap();
        let pkcs8 = key.serialize_der();
        let sec1 = yasna::parse_der(&pkcs8, |r| {
            r.read_sequence(|r| {
                r.next().read_u8()?;
                r.next().read_der()?;
                r.next().read_bytes()
            })
        })
        .unwrap();
        let pem_text = pem::encode(&pem::Pem::new("EC PRIVATE KEY", sec1));
        let loaded = load_private_key(&pem_text, KeyType::EcdsaP256).unwrap();
        assert_eq!(loaded.public_key_raw(), key.public_key_raw());
        assert!(load_private_key(&pem_text, KeyType::EcdsaP384).is_err());
    }

    use rcgen::PublicKeyData;

    fn csr_pem(key: &KeyPair, sans: &[&str]) -> String {
        let params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn csrs_yield_their_key_and_names() {
        let key = KeyType::EcdsaP384.generate().unwrap();
        let csr = VerifiedCsr::from_pem(&csr_pem(&key, &["n1.example", "10.0.0.1"])).unwrap();
        assert_eq!(csr.key_type, KeyType::EcdsaP384);
        let names: Vec<String> = csr.sans.iter().map(|s| s.to_string()).collect();
        assert_eq!(names, ["DNS:n1.example", "IP:10.0.0.1"]);
        assert_eq!(csr.public_key, key.subject_public_key_info());
    }

    #[test]
    fn a_csr_with_a_broken_signature_is_refused() {
        let key = KeyType::EcdsaP256.generate().unwrap();
        let pem_text = csr_pem(&key, &["n1.example"]);
        let mut der = pem::parse(&pem_text).unwrap().into_contents();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        assert!(matches!(
            VerifiedCsr::from_der(&der),
            Err(PkiError::CsrSignature | PkiError::Csr(_))
        ));
        assert!(VerifiedCsr::from_pem(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
        )
        .is_err());
        assert!(VerifiedCsr::from_pem("not pem at all").is_err());
    }

    #[test]
    fn fingerprints_look_like_what_nodes_pin() {
        let fp = fingerprint(b"x");
        assert!(fp.starts_with("sha256:"));
        assert_eq!(fp.len(), 7 + 64);
    }
}
