//! One CRL per trusted CA in the PKI dir, next to etcd's `ca.crl`, for RFC 5280 checkers.
//!
//! etcd reads `ca.crl`, which lists every revoked serial whichever generation issued it, and
//! checks neither its signature nor its issuer. Checkers that follow RFC 5280 (`openssl verify
//! -crl_check`, curl's `--crlfile`) want each certificate's CRL signed by its own issuer, so
//! during a CA rotation a certificate of the retiring generation needs that generation's CRL.
//! [`refresh_issuer_crls`] keeps `crl-<first 16 hex digits of the CA's sha256 fingerprint>.crl`
//! for each CA of the installed trust bundle (from `GET /v1/crl?ca=sha256:HEX`, conditional on the
//! file already there), and removes the files of CAs no longer in the bundle. Like `ca.crl`,
//! each is replaced atomically and only by a CRL that parses and that its CA signed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hyper::header::IF_NONE_MATCH;
use hyper::{Method, StatusCode};

use super::AgentError;
use crate::client::ApiClient;
use crate::fsutil::{self, FsError};
use crate::pki;
use crate::wire::ErrorCode;

const PREFIX: &str = "crl-";
const SUFFIX: &str = ".crl";
/// Hex digits of the fingerprint in a file name: 64 bits, plenty to tell a bundle's CAs apart.
const NAME_HEX_DIGITS: usize = 16;

/// What [`refresh_issuer_crls`] changed in the PKI dir.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct IssuerCrls {
    /// CRL files written (new or changed).
    pub written: Vec<PathBuf>,
    /// CRL files removed because their CA left the bundle.
    pub removed: Vec<PathBuf>,
}

/// The file name of a CA's own CRL: `crl-` and the first 16 hex digits of its fingerprint.
pub fn file_name(ca_der: &[u8]) -> String {
    let fingerprint = pki::fingerprint(ca_der);
    let hex_part = fingerprint.trim_start_matches("sha256:");
    format!("{PREFIX}{}{SUFFIX}", &hex_part[..NAME_HEX_DIGITS])
}

/// True for names [`file_name`] makes (and so the only files this module ever removes).
fn is_issuer_crl_name(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_suffix(SUFFIX))
        .is_some_and(|hex_part| {
            hex_part.len() == NAME_HEX_DIGITS
                && hex_part
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// Of the names in a directory, the issuer CRLs that belong to no CA in `keep`.
fn stale<'a>(names: impl IntoIterator<Item = &'a str>, keep: &BTreeSet<String>) -> Vec<&'a str> {
    names
        .into_iter()
        .filter(|n| is_issuer_crl_name(n) && !keep.contains(*n))
        .collect()
}

/// Fetches the CRL of every CA in `bundle` (the installed trust bundle, DER) and installs each
/// in `dir` as `crl-<first 16 hex digits of its fingerprint>.crl`; removes those of CAs that left
/// the bundle. Call it after refreshing `ca.crl`, with a client that trusts the bundle.
///
/// A CA the server no longer knows (404 `generation_unknown`: retired since the bundle was
/// installed) is skipped; its file goes once the new bundle is installed. Any other failure for
/// one CA does not stop the others: every CA is tried, then the first error is returned.
pub async fn refresh_issuer_crls(
    client: &ApiClient,
    dir: &Path,
    bundle: &[Vec<u8>],
) -> Result<IssuerCrls, AgentError> {
    let mut changed = IssuerCrls::default();
    let mut first_error = None;
    let mut keep = BTreeSet::new();
    for ca in bundle {
        let name = file_name(ca);
        let path = dir.join(&name);
        keep.insert(name);
        match refresh_one(client, &path, ca).await {
            Ok(true) => changed.written.push(path),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot refresh a CA's CRL");
                first_error.get_or_insert(e);
            }
        }
    }
    let names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| FsError::new("read", dir, e))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    for name in stale(names.iter().map(String::as_str), &keep) {
        let path = dir.join(name);
        std::fs::remove_file(&path).map_err(|e| FsError::new("remove", &path, e))?;
        tracing::info!(file = %path.display(), "removed the CRL of a CA no longer trusted");
        changed.removed.push(path);
    }
    if !changed.removed.is_empty() {
        fsutil::sync_dir(dir)?;
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(changed),
    }
}

/// Installs one CA's CRL at `path` if the server has a different one. True when written.
async fn refresh_one(client: &ApiClient, path: &Path, ca: &[u8]) -> Result<bool, AgentError> {
    let request = format!("/v1/crl?ca={}", pki::fingerprint(ca));
    let old = std::fs::read(path).ok();
    // The server's ETag is the SHA-256 of the body: the file on disk is the only state needed.
    let headers: Vec<_> = old
        .iter()
        .map(|der| (IF_NONE_MATCH, format!("\"{}\"", pki::sha256_hex(der))))
        .collect();
    let response = match ApiClient::check(client.send(Method::GET, &request, None, &headers).await?)
    {
        Ok(r) => r,
        Err(e) if e.error_code() == Some(ErrorCode::GenerationUnknown) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if response.status == StatusCode::NOT_MODIFIED {
        return Ok(false);
    }
    let der = response.body.to_vec();
    pki::check_crl_der(&der).map_err(|e| AgentError::BadAnswer {
        what: "CA's own CRL",
        reason: e.to_string(),
    })?;
    // Also what an older server that ignores `?ca=` would fail: it sends etcd's CRL, signed by
    // the active CA, which must not be installed under another CA's name.
    if !pki::crl_issued_by(&der, ca) {
        return Err(AgentError::BadAnswer {
            what: "CA's own CRL",
            reason: format!("it is not signed by {}", pki::fingerprint(ca)),
        });
    }
    if old.as_deref() == Some(der.as_slice()) {
        return Ok(false);
    }
    fsutil::write_atomic(path, &der, fsutil::PUBLIC)?;
    tracing::info!(file = %path.display(), bytes = der.len(), "installed a CA's own CRL");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cas_crl_is_named_by_the_start_of_its_fingerprint() {
        let ca = b"any DER bytes";
        let hex_part = pki::sha256_hex(ca);
        assert_eq!(file_name(ca), format!("crl-{}.crl", &hex_part[..16]));
        assert!(is_issuer_crl_name(&file_name(ca)));
    }

    #[test]
    fn only_issuer_crls_of_cas_that_left_the_bundle_are_stale() {
        let kept = file_name(b"new CA");
        let gone = file_name(b"old CA");
        let keep = BTreeSet::from([kept.clone()]);
        let names = [
            kept.as_str(),
            gone.as_str(),
            "ca.crl",
            "ca.crt",
            "server.key",
            "crl-notes.crl",
            "crl-0123456789ABCDEF.crl",
            "crl-0123456789abcdef.crl.tmp",
            "crl-0123456789abcde.crl",
        ];
        assert_eq!(stale(names, &keep), [gone.as_str()]);
    }
}
