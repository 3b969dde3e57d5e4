//! `etcd-ca inspect`: what is in any PEM certificate file or CRL (PEM or DER, like the `ca.crl`
//! etcd reads), and whether it expires soon.
//!
//! Works on any certificate (ours, kubeadm's, cfssl's), like `kubeadm certs check-expiration`
//! for arbitrary files. Reading files is the caller's job; this module judges summaries.

use std::path::PathBuf;

use serde::Serialize;
use time::OffsetDateTime;

use crate::pki::{self, CertSummary, PkiError};

/// How a certificate stands against the warning window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expiry {
    Ok,
    ExpiresSoon,
    Expired,
    NotYetValid,
}

/// One certificate found in a file.
#[derive(Clone, Debug, Serialize)]
pub struct Inspected {
    pub file: PathBuf,
    /// Position in the file (bundles hold several).
    pub index: usize,
    #[serde(flatten)]
    pub summary: CertSummary,
    pub days_left: i64,
    pub expiry: Expiry,
}

/// Summarises every certificate in a PEM text.
pub fn inspect_pem(
    file: PathBuf,
    text: &str,
    now: OffsetDateTime,
    warn: time::Duration,
) -> Result<Vec<Inspected>, PkiError> {
    pki::pem_certificates(text)?
        .iter()
        .enumerate()
        .map(|(index, der)| {
            let summary = CertSummary::from_der(der)?;
            let expiry = judge(&summary, now, warn);
            Ok(Inspected {
                file: file.clone(),
                index,
                days_left: summary.days_left(now),
                summary,
                expiry,
            })
        })
        .collect()
}

/// A CRL found in a file.
#[derive(Clone, Debug, Serialize)]
pub struct InspectedCrl {
    pub file: PathBuf,
    pub issuer: String,
    pub crl_number: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub this_update: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_update: Option<OffsetDateTime>,
    pub revoked: usize,
    /// Judged on nextUpdate: a CRL past it is stale for RFC 5280 checkers (etcd does not care).
    pub expiry: Expiry,
}

/// The CRL in `bytes` (DER, or PEM `X509 CRL`), if that is what the file holds.
///
/// `warn` is the caller's window; without one a CRL warns in the last quarter of its lifetime
/// (a 7-day CRL with less than 42 hours left), since CRLs live days, not months, and are
/// replaced long before they run out.
pub fn inspect_crl(
    file: PathBuf,
    bytes: &[u8],
    now: OffsetDateTime,
    warn: Option<time::Duration>,
) -> Option<InspectedCrl> {
    use x509_parser::prelude::FromDer;
    use x509_parser::revocation_list::CertificateRevocationList;
    let der = match pem::parse(bytes) {
        Ok(block) if block.tag() == "X509 CRL" => block.into_contents(),
        Ok(_) => return None,
        Err(_) => bytes.to_vec(),
    };
    let (_, crl) = CertificateRevocationList::from_der(&der).ok()?;
    let this_update = crl.last_update().to_datetime();
    let next_update = crl.next_update().map(|t| t.to_datetime());
    let warn = |at: OffsetDateTime| warn.unwrap_or((at - this_update) / 4);
    let expiry = match next_update {
        Some(at) if at <= now => Expiry::Expired,
        Some(at) if at - now <= warn(at) => Expiry::ExpiresSoon,
        _ if this_update > now => Expiry::NotYetValid,
        _ => Expiry::Ok,
    };
    Some(InspectedCrl {
        file,
        issuer: crl.issuer().to_string(),
        crl_number: crl.crl_number().map(|n| n.to_string()),
        this_update,
        next_update,
        revoked: crl.iter_revoked_certificates().count(),
        expiry,
    })
}

/// Expired, not yet valid, expiring within `warn`, or fine.
pub fn judge(summary: &CertSummary, now: OffsetDateTime, warn: time::Duration) -> Expiry {
    if summary.not_after <= now {
        Expiry::Expired
    } else if summary.not_before > now {
        Expiry::NotYetValid
    } else if summary.not_after - now <= warn {
        Expiry::ExpiresSoon
    } else {
        Expiry::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn summary(not_before: OffsetDateTime, not_after: OffsetDateTime) -> CertSummary {
        CertSummary {
            subject: String::new(),
            issuer: String::new(),
            serial: String::new(),
            sans: vec![],
            extended_key_usages: vec![],
            is_ca: false,
            key_type: String::new(),
            not_before,
            not_after,
            fingerprint: String::new(),
        }
    }

    #[test]
    fn expiry_is_judged_against_the_window() {
        let now = datetime!(2026-11-22 0:00 UTC);
        let warn = time::Duration::days(30);
        let start = datetime!(2026-01-01 0:00 UTC);
        assert_eq!(
            judge(&summary(start, datetime!(2027-06-01 0:00 UTC)), now, warn),
            Expiry::Ok
        );
        assert_eq!(
            judge(&summary(start, datetime!(2026-12-01 0:00 UTC)), now, warn),
            Expiry::ExpiresSoon
        );
        assert_eq!(
            judge(&summary(start, datetime!(2026-11-21 0:00 UTC)), now, warn),
            Expiry::Expired
        );
        assert_eq!(
            judge(
                &summary(
                    datetime!(2026-12-01 0:00 UTC),
                    datetime!(2027-12-01 0:00 UTC)
                ),
                now,
                warn
            ),
            Expiry::NotYetValid
        );
    }
}
